var balloon = createSprite(200, 400);
balloon.setAnimation("balloon");
balloon.scale = 0.4;
var wind = createSprite(0, 100);
wind.setAnimation("cloud");
wind.velocityX = 1.5;

function draw() {
  background("lightcyan");
  balloon.velocityY = balloon.velocityY - 0.02;
  wind.x = wind.x % 450;
  if (keyDown("left")) {
    balloon.x = balloon.x - 3;
  }
  if (keyDown("right")) {
    balloon.x = balloon.x + 3;
  }
  drawSprites();
}
