var bunny = createSprite(200, 350);
bunny.setAnimation("bunny");
bunny.scale = 0.4;
var carrot = createSprite(200, 0);
carrot.velocityY = 2;

function draw() {
  background("lightgreen");
  if (keyDown("left")) {
    bunny.x = bunny.x - 4;
  }
  if (carrot.y > 400) {
    carrot.y = 0;
  }
  drawSprites();
}
