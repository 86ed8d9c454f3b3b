var car = createSprite(0, 200);
car.setAnimation("car");
car.velocityX = 3;

function draw() {
  background("gray");
  if (keyDown("space")) {
    text("Beep beep!", 180, 100);
  }
  drawSprites();
}
